"""Datasets that grow: append runs, generations, dry runs, and one writer at a time (real Ray, real audio)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from losatok_data.index import read_shard_summary
from losatok_data.layout import DatasetLayout
from losatok_data.reader import open_dataset
from losatok_data.verify import verify_dataset
from losatok_input.sources import input_key
from pipelines.lease import LEASE_FILE, Lease
from pipelines.run import tokenize
from pipelines.testing import tiny_run

ROOT = Path(__file__).resolve().parents[2]


def files_of(small_corpus: Path) -> list[Path]:
    return sorted(small_corpus.iterdir())


def add(corpus: Path, files: list[Path]) -> None:
    corpus.mkdir(exist_ok=True)
    for path in files:
        shutil.copy(path, corpus / path.name)


def expected_keys(corpus: Path) -> list[str]:
    """One segment per recording (all are shorter than 30 s), named by the input's key."""
    return sorted(f"{input_key(str(p))}_0000" for p in corpus.iterdir())


def keys_of(sink: Path, generation: int | None = None) -> list[str]:
    keys = open_dataset(str(sink), generation=generation).index().column("key").to_pylist()
    assert len(keys) == len(set(keys)), "a key is indexed twice"
    return sorted(keys)


def tree(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_mtime_ns for p in path.rglob("*")}


def cli(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.tokenize", *overrides]


def run_cli(*overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(cli(*overrides), capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.mark.slow  # five runs: about 17 s on two cores
def test_an_append_encodes_only_new_inputs_and_keeps_what_left_the_source(
    ray_address, small_corpus, tmp_path
):
    corpus, sink = tmp_path / "corpus", tmp_path / "ds"
    files = files_of(small_corpus)
    add(corpus, files[:4])
    first = tokenize(tiny_run(corpus, sink, inputs_per_shard=2))
    assert first.generation == 1 and first.inputs_new == 4 and first.units == 2
    old_tars = {p: p.stat().st_mtime_ns for p in sink.rglob("*.tar")}
    gen1_keys = expected_keys(corpus)

    add(corpus, files[4:6])
    grown = tokenize(tiny_run(corpus, sink, inputs_per_shard=2))
    assert (grown.generation, grown.inputs_listed, grown.inputs_new, grown.inputs_missing) == (2, 6, 2, 0)
    assert grown.units == 3 and grown.units_resumed == 2 and grown.samples == 2  # nothing re-encoded
    assert {p: p.stat().st_mtime_ns for p in old_tars} == old_tars  # committed shards never rewritten
    assert keys_of(sink) == expected_keys(corpus)
    assert keys_of(sink, generation=1) == gen1_keys  # a reader pinned to generation 1
    card = open_dataset(str(sink)).card
    assert [(g.number, g.source, g.run_id) for g in card.generations] == [
        (1, str(corpus), first.run_id),
        (2, str(corpus), grown.run_id),
    ]
    assert [
        (g.inputs_new, g.first_shard, g.shards, g.shards_committed, g.samples) for g in card.generations
    ] == [
        (4, 0, 2, 2, 4),
        (2, 2, 1, 1, 2),
    ]
    summary = read_shard_summary(DatasetLayout(str(sink)))  # rewritten by the append
    assert [(n, s.samples) for n, s in summary.items()] == [(0, 2), (1, 2), (2, 2)]
    assert verify_dataset(str(sink)).ok

    # a recording leaves the source: reported, and its samples stay in the dataset
    (corpus / files[0].name).unlink()
    before = tree(sink)
    dry = tokenize(replace(tiny_run(corpus, sink, inputs_per_shard=2), dry_run=True))
    assert dry.dry_run and (dry.inputs_new, dry.inputs_missing) == (0, 1)
    assert tree(sink) == before  # a dry run writes nothing
    after = tokenize(tiny_run(corpus, sink, inputs_per_shard=2))
    assert after.generation is None and after.inputs_missing == 1 and after.samples == 0
    assert after.missing_examples == [str(corpus / files[0].name)]
    assert len(keys_of(sink)) == 6 and len(open_dataset(str(sink)).card.generations) == 2


def test_another_source_path_is_an_append_recorded_in_the_card(ray_address, small_corpus, tmp_path):
    first_corpus, second_corpus, sink = tmp_path / "a", tmp_path / "b", tmp_path / "ds"
    files = files_of(small_corpus)
    add(first_corpus, files[:2])
    add(second_corpus, files[2:3])
    tokenize(tiny_run(first_corpus, sink))
    summary = tokenize(tiny_run(second_corpus, sink))
    assert summary.generation == 2 and summary.inputs_new == 1 and summary.inputs_missing == 0
    card = open_dataset(str(sink)).card
    assert card.source == str(first_corpus)  # never relabelled
    assert [(g.source, g.inputs_new, g.samples) for g in card.generations] == [
        (str(first_corpus), 2, 2),
        (str(second_corpus), 1, 1),
    ]
    assert keys_of(sink) == sorted(expected_keys(first_corpus) + expected_keys(second_corpus))


def test_cli_refuses_a_second_writer_with_status_2_and_dry_run_writes_nothing(small_corpus, tmp_path):
    corpus, sink = tmp_path / "corpus", tmp_path / "ds"
    add(corpus, files_of(small_corpus)[:3])
    with Lease(__import__("fsspec").filesystem("file"), str(sink), "holder-run").held():
        refused = run_cli(f"source.path={corpus}", f"sink.path={sink}")
    assert refused.returncode == 2, refused.stderr
    assert (
        f"is being written by run holder-run (host {os.uname().nodename}, pid {os.getpid()}" in refused.stderr
    )
    assert [p.name for p in sink.iterdir()] == [".lease.lock"]  # the refused run wrote nothing

    before = tree(tmp_path)
    dry = run_cli(f"source.path={corpus}", f"sink.path={tmp_path / 'fresh'}", "dry_run=true")
    assert dry.returncode == 0, dry.stderr
    assert "dry run, nothing written: source: 3 inputs listed, 3 new would be as generation 1" in dry.stdout
    assert tree(tmp_path) == before and not (tmp_path / "fresh").exists()


def committed(sink: Path) -> int:
    return len(list((sink / "index").glob("shard-*.parquet"))) if (sink / "index").exists() else 0


@pytest.mark.slow
def test_a_sigkilled_append_resumes_with_nothing_lost_or_duplicated(
    ray_address, small_corpus, tmp_path, caplog
):
    corpus, sink = tmp_path / "corpus", tmp_path / "ds"
    files = files_of(small_corpus)
    add(corpus, files[:3])
    tokenize(tiny_run(corpus, sink, inputs_per_shard=1))
    add(corpus, files[3:])  # 9 new recordings, one shard each

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    overrides = [f"source.path={corpus}", f"sink.path={sink}", "sink.inputs_per_shard=1"]
    driver = subprocess.Popen(
        cli(*overrides, f"cluster.address={ray_address}"), env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while committed(sink) < 5 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        driver.wait()
    done = committed(sink)
    assert 3 < done < 12, f"the kill should land part-way through the append ({done} of 12 shards)"
    assert (sink / LEASE_FILE).exists()  # the killed run's lease is left behind

    with caplog.at_level("WARNING", logger="pipelines.lease"):
        summary = tokenize(tiny_run(corpus, sink, inputs_per_shard=1))
    assert any("taking over the lease" in r.getMessage() for r in caplog.records)
    assert summary.ok and summary.generation is None and summary.units == 12 and summary.units_resumed == done
    assert keys_of(sink) == expected_keys(corpus)
    card = open_dataset(str(sink)).card
    assert [(g.number, g.inputs_new, g.shards_committed) for g in card.generations] == [(1, 3, 3), (2, 9, 9)]
    assert verify_dataset(str(sink)).ok and not (sink / LEASE_FILE).exists()


@pytest.mark.slow
def test_two_runs_started_at_the_same_moment_write_once(ray_address, small_corpus, tmp_path):
    corpus, sink = tmp_path / "corpus", tmp_path / "ds"
    add(corpus, files_of(small_corpus)[:6])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = cli(f"source.path={corpus}", f"sink.path={sink}", "sink.inputs_per_shard=2",
                  f"cluster.address={ray_address}")  # fmt: skip
    runs = [
        subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    codes = sorted(run.returncode for run in runs)
    assert codes == [0, 2], outputs
    loser = next(err for (_, err), run in zip(outputs, runs) if run.returncode == 2)
    assert "is being written by run" in loser
    assert keys_of(sink) == expected_keys(corpus)
    assert len(open_dataset(str(sink)).card.generations) == 1 and verify_dataset(str(sink)).ok
